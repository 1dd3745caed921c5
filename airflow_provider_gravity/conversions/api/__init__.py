"""
Gravity's Conversions API: the HTTP client in layers, and the outcome of each event sent.

::

    transport.py   the HTTP I/O: pooled sessions (one per sending thread), retries, bounded reads, no redirects
    secrets.py     the API key's guards: the scrubber of every text from Gravity, and the auth that adds the key
    wire.py        the request body from encoded events, and Gravity's answer as one result per event
    client.py      GravityClient, composing the three: the base URL, and the typed error of each final status
    outcomes.py    each sent event's bucket, splitting a batch Gravity refuses whole
    sender.py      what the pipeline sends through (the client, or a stand-in)

Nothing is imported here: the pipeline's outcomes and sender need only the wire format, not requests.
"""
