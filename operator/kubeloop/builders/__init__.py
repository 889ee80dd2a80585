"""Pure builders: typed spec (+ owner, settings) -> child manifest dict. No I/O."""
