/// The test API that is written in Lua: `test`, `run`, `expect` and its matchers with a readable diff.
/// The host adds `__run` and `__tick` (suspending), `__store_*`, `clock`, `sample`, `decode`, `http.mock`, `json`, `kazoo`, `print`, `require`.
enum TestPrelude {
    static let source = #"""
        local tests = {}

        function test(name, fn)
          if type(name) ~= "string" then error("test(name, fn): name must be a string", 2) end
          if type(fn) ~= "function" then error("test(name, fn): fn must be a function", 2) end
          tests[#tests + 1] = { name = name, fn = fn }
        end

        function __test_count() return #tests end
        function __test_get(i) return tests[i].name, tests[i].fn end

        -- run(rule_name, event [, hook]): runs one rule on an event (a sample, a decoded body or a table)
        -- and returns what it did: { outcome, stage, skipped, dropped, forwards, http, logs, error }.
        function run(rule, event, hook)
          local out, err = __run(rule, event, hook)
          if out == nil then error(err, 2) end
          return out
        end

        -- tick(rule_name): runs the rule's tick with the test clock's now; returns what run returns.
        function tick(rule)
          local out, err = __tick(rule)
          if out == nil then error(err, 2) end
          return out
        end

        -- The store the rules of this test wrote, fresh for every test: store.rule(name), store.shared and
        -- store.call(call_id), each with get(key), set(key, value) and keys().
        local function view(namespace)
          return {
            get = function(key) return __store_get(namespace, key) end,
            set = function(key, value) __store_set(namespace, key, value) end,
            keys = function() return __store_keys(namespace) end,
          }
        end
        store = {
          rule = function(name) return view("rule:" .. name) end,
          shared = view("shared"),
          call = function(id) return view("call:" .. id) end,
        }

        local function describe(v)
          if type(v) == "string" then return string.format("%q", v) end
          if v == json.null then return "json.null" end
          if type(v) == "table" then
            local ok, text = pcall(json.encode, v)
            if ok then return text end
          end
          return tostring(v)
        end

        local function same(a, b)
          if a == b then return true end
          if type(a) ~= "table" or type(b) ~= "table" then return false end
          for k, v in pairs(a) do if not same(v, b[k]) then return false end end
          for k in pairs(b) do if a[k] == nil then return false end end
          return true
        end

        local function differences(expected, actual, path, out)
          if #out >= 10 then return end
          if type(expected) == "table" and type(actual) == "table" then
            local keys, seen = {}, {}
            for k in pairs(expected) do keys[#keys + 1] = k; seen[k] = true end
            for k in pairs(actual) do if not seen[k] then keys[#keys + 1] = k end end
            table.sort(keys, function(a, b) return tostring(a) < tostring(b) end)
            for _, k in ipairs(keys) do
              local p = type(k) == "number" and (path .. "[" .. k .. "]") or (path .. "." .. tostring(k))
              differences(expected[k], actual[k], p, out)
            end
          elseif not same(expected, actual) then
            local where = path == "" and "value" or (path:sub(1, 1) == "." and path:sub(2) or path)
            out[#out + 1] = string.format("  %s: expected %s, got %s", where, describe(expected), describe(actual))
          end
        end

        -- Failures point at the test's line: level 3 is the test function calling the matcher.
        local function fail(message, lines)
          if lines and #lines > 0 then message = message .. "\n" .. table.concat(lines, "\n") end
          error(message, 3)
        end

        function expect(actual)
          local e = {}
          function e.to_be(expected)
            if not same(expected, actual) then
              local lines = {}
              differences(expected, actual, "", lines)
              fail(string.format("expected %s, got %s", describe(expected), describe(actual)),
                type(expected) == "table" and type(actual) == "table" and lines or nil)
            end
          end
          e.to_equal = e.to_be
          function e.not_to_be(other)
            if same(other, actual) then fail("expected a value other than " .. describe(other)) end
          end
          function e.to_be_nil()
            if actual ~= nil then fail("expected nil, got " .. describe(actual)) end
          end
          function e.to_be_truthy()
            if not actual then fail("expected a truthy value, got " .. describe(actual)) end
          end
          function e.to_be_falsy()
            if actual then fail("expected a falsy value, got " .. describe(actual)) end
          end
          function e.to_contain(part)
            if type(actual) == "string" then
              if not actual:find(part, 1, true) then fail(string.format("expected %s to contain %s", describe(actual), describe(part))) end
            elseif type(actual) == "table" then
              for _, v in pairs(actual) do if same(v, part) then return end end
              fail(string.format("expected %s to contain %s", describe(actual), describe(part)))
            else
              fail("to_contain needs a string or a table, got " .. describe(actual))
            end
          end
          function e.to_match(pattern)
            if type(actual) ~= "string" or not actual:match(pattern) then
              fail(string.format("expected %s to match %s", describe(actual), describe(pattern)))
            end
          end
          function e.to_have_length(n)
            local length = type(actual) == "table" and #actual or type(actual) == "string" and #actual or nil
            if length ~= n then fail(string.format("expected length %d, got %s", n, tostring(length))) end
          end
          return e
        end
        """#
}
