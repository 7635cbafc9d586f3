"""Exporters stage: finished events -> files, an HTTP ingest endpoint, OpenTelemetry, memory."""
