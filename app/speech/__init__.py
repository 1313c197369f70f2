"""POST /v1/audio/speech: the request structs, the serving logic and the route."""
