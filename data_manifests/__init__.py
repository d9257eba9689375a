"""Dataset definitions (TOML) shipped with the package."""
