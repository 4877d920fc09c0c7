"""Compare (tables, differences), plots and the HTML report."""
