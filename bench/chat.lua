-- wrk: POST /chat with a JSON question (a new session each time, as a first question does).
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"query": "What does ZMP stand for?"}'
