"""The HTTP service: routes, views, authorisation, middleware, metrics, the server runner."""
