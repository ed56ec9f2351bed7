"""Ray scale-out: stateless tool workers (search, fetch, read) and rollout workers that call the same `run_episode`.

Ray is an optional extra (`pip install 'researchrl[ray]'`); nothing here imports it until a pool starts.
"""
