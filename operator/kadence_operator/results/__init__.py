"""Run results into Job status: the pure fold (``fold``) and the results-stream consumer."""
