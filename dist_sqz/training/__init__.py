"""A training run: the loop (`trainer`), its parts built in order (`setup`), one step's
arithmetic (`step`), data, optimizer, evaluation, checkpoints, health and stopping, and the
shipped recipes. Everything `dist-sqz train` executes lives here."""
