"""Envoy's share of keeping keys from clients: a Lua filter that masks the model
endpoints' keys in what Envoy relays.

Envoy sends the default model its key (``%ENVIRONMENT(NAME)%``) and relays its answer as
it is, so a careless provider's 401 that echoes the key would reach the client. The
filter reads the same environment variables (the bootstrap holds only their names) and
masks their values in response headers, and in the bodies of error responses (status 400
and above): those are small and never streamed. Bodies of answers (2xx) are not read:
they may be streams, and an answer is the model's.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from .config.model import ENV_NAME_PATTERN
from .redact import MASK

# Checked again here: a name is written into the Lua source.
_ENV_NAME = re.compile(ENV_NAME_PATTERN)

_SOURCE = """\
-- Rendered by ensemble_extproc.envoy_redact: masks model keys (values of the environment
-- variables below) in response headers and error bodies.
local MASK = "%(mask)s"
local secrets = {}
for _, name in ipairs({%(names)s}) do
  local value = os.getenv(name)
  if value ~= nil and value ~= "" then
    secrets[#secrets + 1] = value
  end
end

local function mask(text)
  for _, secret in ipairs(secrets) do
    local out, from = {}, 1
    while true do
      local first, last = string.find(text, secret, from, true)
      if first == nil then
        break
      end
      out[#out + 1] = string.sub(text, from, first - 1)
      out[#out + 1] = MASK
      from = last + 1
    end
    if from > 1 then
      out[#out + 1] = string.sub(text, from)
      text = table.concat(out)
    end
  end
  return text
end

function envoy_on_response(handle)
  if #secrets == 0 then
    return
  end
  local headers = handle:headers()
  local changed = {}
  for key, value in pairs(headers) do
    local masked = mask(value)
    if masked ~= value then
      changed[key] = masked
    end
  end
  for key, value in pairs(changed) do
    headers:replace(key, value)
  end
  local status = tonumber(headers:get(":status")) or 0
  if status < 400 then
    return
  end
  local body = handle:body()
  if body == nil then
    return
  end
  local text = body:getBytes(0, body:length())
  local masked = mask(text)
  if masked ~= text then
    body:setBytes(masked)
  end
end
"""


def lua_source(env_names: Sequence[str]) -> str:
    """The filter's script for these environment variables (names only, never values)."""
    for name in env_names:
        if not _ENV_NAME.fullmatch(name):
            raise ValueError(f"not an environment variable name: {name!r}")
    names = ", ".join(f'"{name}"' for name in env_names)
    return _SOURCE % {"mask": MASK, "names": names}
