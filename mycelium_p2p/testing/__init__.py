"""Test aids shipped with the package: hostile DHT peers for benchmarks and tests."""
