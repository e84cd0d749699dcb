"""ROCm / DTK fixes, one module per fix, each registered as a declared lfkit.patching.Patch."""
