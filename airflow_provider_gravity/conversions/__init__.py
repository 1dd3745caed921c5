"""
The provider's core, importable without Airflow: rows in, one bucket per row out.

A run flows through the subpackages in this order, and none imports a later one (``tools/import_graph.py``):

::

    read/     chunks of warehouse rows, columns named by the column contract, each prepared once
    pii/      e-mails, phones and names normalized and SHA-256 hashed, once per distinct value
    events/   each row validated (or given a named reason) and built into an event, written as JSON
    api/      batches sent to Gravity; each event's answer turned into an outcome
    run/      the pipeline that drives it all, and the ledger that accounts for every row

Shared by all, importing no stage: :mod:`.buckets` (where a row can end), :mod:`.errors` (what can go wrong),
:mod:`.match_keys`, :mod:`.cells` (reading one cell), :mod:`.canonical_json`, :mod:`.encoded_event` and
:mod:`.backoff`.
Nothing is imported here, so that importing the hook or the client does not load pandas.
"""
