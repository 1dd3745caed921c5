"""One run, accounted: the pipeline, its tally of buckets, resuming across retries and the delivery log."""
