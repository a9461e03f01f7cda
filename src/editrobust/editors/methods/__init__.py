"""One module per editor method a config can name (`editors.<name>.method`); see editors/__init__.py."""
