"""The report's sections, one module each; ``SECTIONS`` lists those a study may ask for, in page order
(``GridStudy.report_sections``). The run table (``runs``) always comes last. ``imagenet`` is added (and only
shown) when the experiment has ImageNet-layout runs, whatever the study asked for (dashboards/report.py).
Runs where the report is built: the driver at the end of a sweep, or ``python -m dashboards.report``; never a trial."""

from dashboards.sections import curves, depth, imagenet, paper, responses, search, shortcuts, verdict

SECTIONS = {"verdict": verdict.render, "curves": curves.render, "imagenet": imagenet.render, "depth": depth.render,
            "paper": paper.render, "responses": responses.render, "shortcuts": shortcuts.render,
            "search": search.render}
