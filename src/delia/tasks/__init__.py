"""Task plug-ins (`delia.task` is the interface and registry): halu and translation (the paper's) and the
generic json / label / text tasks a user configures in YAML. Loaded by module name on first lookup."""
