"""One module per scorer behind one contract."""
