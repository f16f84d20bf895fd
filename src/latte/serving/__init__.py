"""`latte serve`: a video-generation service with an OpenAI-style job API, event streams and a web page.

`params` (what a job may ask for), `jobs` (the SQLite job table and the one worker that owns the pipeline),
`app` (the HTTP routes), `page/` (the web page, shipped as package data).
"""
