"""One module per command group: parse, call one library function, render."""
