"""The one route table: every protocol's routes. The dispatcher answers from it and the
OpenAPI document is generated from it, so a route is written once."""

from service.protocols import console, system, tfserving, v2
from service.protocols.native import codec as native
from service.protocols.native import routes as native_routes

ROUTES = [*native_routes.ROUTES, *v2.ROUTES, *tfserving.ROUTES, *system.ROUTES, *console.ROUTES]
PROTOCOLS = [native.PROTOCOL, v2.PROTOCOL, tfserving.PROTOCOL]
SCHEMAS = {**v2.SCHEMAS, **tfserving.SCHEMAS}
