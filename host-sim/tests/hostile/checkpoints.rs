//! Hostile checkpoints (`.pt` zips, pickles, safetensors) against the packer's readers.
