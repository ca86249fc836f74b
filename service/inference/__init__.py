"""The dataplane and what it needs: request inputs -> tensors, request limits, statistics.
No HTTP here: protocol codecs call it with request objects."""
