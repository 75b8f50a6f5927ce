"""Operations: metrics, logs and the admin HTTP server."""
