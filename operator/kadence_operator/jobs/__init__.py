"""Jobs: from a Job body to published run requests (``runs``: pure; ``scheduler``: the loop)."""
