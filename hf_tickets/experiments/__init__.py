"""What the recipes share: arguments, the fine-tune path and what a run leaves in output_dir."""
