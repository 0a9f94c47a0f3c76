"""The local stack as background processes with pid files and logs under one run directory."""
