"""arrowlog."""
