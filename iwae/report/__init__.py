"""Tables, figures and the report document built from finished runs."""
