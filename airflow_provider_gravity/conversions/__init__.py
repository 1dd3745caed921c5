"""
The provider's core, importable without Airflow: rows in, one bucket per row out.

A run flows through the subpackages in this order:

::

    read/     chunks of warehouse rows, columns named by the column contract
    events/   each row validated (or given a named reason) and built into an event
    pii/      e-mails, phones and names normalized and SHA-256 hashed, once per distinct value
    encode    (events/encode.py) each event written as JSON, column by column
    api/      batches sent to Gravity; each event's answer turned into an outcome
    run/      the pipeline that drives it all and accounts for every row: tally, resume, delivery log

Shared by all: :mod:`.buckets` (where a row can end) and :mod:`.errors` (what can go wrong).
Nothing is imported here, so that importing the hook or the client does not load pandas.
"""
