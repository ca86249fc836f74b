"""The door: the gunicorn worker, the dispatcher, the route table's matching, request and
response messages, request ids and the access log. Nothing here knows a model."""
