"""Communication: launcher environments, backends, byte/time accounting, compression."""
