"""GGUF files, validated before anything is trusted: reader.py maps a file and
checks every header field, offset and size against the file itself."""
