"""`perceptsr app`: a local web page to paint FxSR's t map or repaint SFTGAN's segmentation and see the result.

paint.py holds the brush rules (pure numpy), runner.py the model catalog and runs (no Gradio), ui.py the page
(Gradio), server.py the command. Gradio is the optional extra `perceptsr[app]`: only ui.py and server.py's
`prepare` import it.
"""
