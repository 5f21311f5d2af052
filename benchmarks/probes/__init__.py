"""One-off diagnostics that look inside hpckpt (they patch internals and may break
when hpckpt changes); the suites use the public API only."""
