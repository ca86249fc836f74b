"""The wire protocols (native, v2, tfserving): each a thin codec over the dataplane with its
own routes, error shape and OpenAPI operations; ``service.protocols.routes`` gathers them."""
