-- wrk script for the ingress benchmark: cycle through pre-signed webhook requests.
-- The request file (bench/wrk.py writes it) has one request per line, tab-separated:
--   path, JSON body (one line), then header name and value pairs (the signature's)
-- Each request is formatted once in init(); request() only hands out the next one.
local requests = {}
local position = 0

local function split(line)
    local fields = {}
    for field in (line .. "\t"):gmatch("([^\t]*)\t") do
        fields[#fields + 1] = field
    end
    return fields
end

function init(args)
    for line in io.lines(args[1]) do
        local f = split(line)
        if #f >= 2 then
            local headers = { ["Content-Type"] = "application/json" }
            for i = 3, #f - 1, 2 do
                headers[f[i]] = f[i + 1]
            end
            requests[#requests + 1] = wrk.format("POST", f[1], headers, f[2])
        end
    end
    if #requests == 0 then
        error("no requests in " .. args[1])
    end
    position = math.random(#requests) - 1
end

function request()
    position = position % #requests + 1
    return requests[position]
end
