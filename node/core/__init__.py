"""The functional core: pure, synchronous decisions. No I/O, no clock, no logging."""
