// The deterministic simulator.
