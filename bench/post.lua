-- wrk: POST the harness's JSON body.
wrk.method = "POST"
wrk.body = '{"qid":1,"data":{"name":"bench","value":42,"tags":["a","b"]}}'
wrk.headers["Content-Type"] = "application/json"
