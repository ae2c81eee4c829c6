"""Measurement helpers: FLOP counting with deformable attention, attention recording."""
