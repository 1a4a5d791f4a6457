"""The SSH proxy: per-command, per-file-operation and per-forward decisions on asyncssh."""
