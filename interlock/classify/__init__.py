"""Classification of what an action touches: SQL, content, shell commands."""
