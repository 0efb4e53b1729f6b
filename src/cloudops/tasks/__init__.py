"""Task state: the journal that writes every state change with its event, and step plans."""
