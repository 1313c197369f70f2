"""Operations: health and models routes, metrics, logging, request ids, auth, errors, OpenAPI, playground, connection guard, origins."""
