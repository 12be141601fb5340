"""Compute measured and emulated: `dist-sqz profile` (`profiler`, `profile_compress`), the
profiles it writes and ships (`profiles`, `profile_data/`), time-dilated emulated compute
(`emulate`) and compare's compute modes (`modes`)."""
