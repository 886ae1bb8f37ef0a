"""The model zoo: bundled models by name, release files (one safetensors with its architecture config), and
where pretrained weights come from."""
