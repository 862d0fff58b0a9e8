"""File formats shared by several stages (EXR, output path safety)."""
