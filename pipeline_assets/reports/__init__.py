"""Reports: release gates over eval metrics (gates.py) and the markdown report card (report_card.py).

Plain Python; the Dagster assets that call them live in reports/assets.py.
"""
