"""The report's sections, one module each; ``SECTIONS`` lists those a study may ask for, in page order
(``GridStudy.report_sections``). The run table (``runs``) always comes last."""

from dashboards.sections import curves, depth, paper, responses, search, shortcuts, verdict

SECTIONS = {"verdict": verdict.render, "curves": curves.render, "depth": depth.render, "paper": paper.render,
            "responses": responses.render, "shortcuts": shortcuts.render, "search": search.render}
