"""Traffic: the locustfile, runtime clients, stream parsers, prompt sets, load shapes and sinks."""
