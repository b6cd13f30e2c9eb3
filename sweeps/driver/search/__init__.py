"""The Optuna search under ASHA, in the driver: its flags and resolved settings, the searcher, the ASHA
scheduler and its rung records, and the search and confirm stages. Driver only."""
