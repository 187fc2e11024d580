# hadiscovery: what Home Assistant's MQTT discovery documentation allows in a single-component
# discovery config, per platform, as a table: every key documented and the keys it requires.
# check(component, config) returns every problem: an unknown key (HA ignores it without a word,
# which is how object_id stopped working in 2026.4), a missing required key, a nested mapping
# with either.
#
# Where each was read (home-assistant.io as served, fetched 2026-06-28 unless said otherwise):
#   sensor        https://www.home-assistant.io/integrations/sensor.mqtt/
#   binary_sensor https://www.home-assistant.io/integrations/binary_sensor.mqtt/
#   switch        https://www.home-assistant.io/integrations/switch.mqtt/
#   event         https://www.home-assistant.io/integrations/event.mqtt/
#   number        https://www.home-assistant.io/integrations/number.mqtt/
#   text          https://www.home-assistant.io/integrations/text.mqtt/
#   button        home-assistant/home-assistant.io source/_integrations/button.mqtt.markdown (the
#                 newest stored copy predates 2025.10: it still lists object_id and lacks
#                 default_entity_id; default_entity_id is taken from the common options, which
#                 every 2026 page above lists word for word, and object_id is left out as on them)
#   origin        https://www.home-assistant.io/integrations/mqtt/ "Adding information about the
#                 origin of a discovery message": name (required), sw_version, support_url
# "platform" is left out everywhere: the pages allow it only in device-based discovery
# messages, and these configs are single-component ones.

# Options every platform page lists (the entity, its device, its availability).
AVAILABILITY_ITEM = {'keys': {'payload_available', 'payload_not_available', 'topic', 'value_template'},
                     'required': {'topic'}}
DEVICE = {'keys': {'configuration_url', 'connections', 'hw_version', 'identifiers', 'manufacturer', 'model',
                   'model_id', 'name', 'serial_number', 'suggested_area', 'sw_version', 'via_device'},
          'required': set()}
ORIGIN = {'keys': {'name', 'sw_version', 'support_url'}, 'required': {'name'}}
COMMON = {'availability', 'availability_mode', 'availability_template', 'availability_topic', 'default_entity_id',
          'device', 'enabled_by_default', 'encoding', 'entity_category', 'entity_picture', 'icon',
          'json_attributes_template', 'json_attributes_topic', 'name', 'qos', 'unique_id',
          # From the discovery page, allowed in every discovery payload.
          'origin'}

PLATFORMS = {
    'sensor': {
        'keys': COMMON | {'device_class', 'expire_after', 'force_update', 'group', 'last_reset_value_template',
                          'options', 'suggested_display_precision', 'state_class', 'state_topic',
                          'unit_of_measurement', 'value_template'},
        'required': {'state_topic'},
    },
    'binary_sensor': {
        'keys': COMMON | {'device_class', 'expire_after', 'force_update', 'group', 'off_delay', 'payload_available',
                          'payload_not_available', 'payload_off', 'payload_on', 'state_topic', 'value_template'},
        'required': {'state_topic'},
    },
    'switch': {
        'keys': COMMON | {'command_template', 'command_topic', 'device_class', 'group', 'message_expiry_interval',
                          'optimistic', 'payload_off', 'payload_on', 'retain', 'state_off', 'state_on',
                          'state_topic', 'value_template'},
        'required': {'command_topic'},
    },
    'event': {
        'keys': COMMON | {'device_class', 'event_types', 'state_topic', 'value_template'},
        'required': {'event_types', 'state_topic'},
    },
    'number': {
        # The number page lists neither availability_template nor an availability item's
        # value_template, which every other page does; HA's MQTT code shares one availability
        # schema, so they are kept as common (a gap of that page, not of the platform).
        'keys': COMMON | {'command_template', 'command_topic', 'device_class', 'max', 'message_expiry_interval', 'min',
                          'mode', 'optimistic', 'payload_reset', 'retain', 'state_topic', 'step',
                          'unit_of_measurement', 'value_template'},
        'required': {'command_topic'},
    },
    'text': {
        'keys': (COMMON - {'icon'}) | {'command_template', 'command_topic', 'max', 'message_expiry_interval', 'min',
                                       'mode', 'pattern', 'retain', 'state_topic', 'value_template'},
        'required': {'command_topic'},
    },
    'button': {
        'keys': COMMON | {'command_template', 'command_topic', 'device_class', 'payload_available',
                          'payload_not_available', 'payload_press', 'retain'},
        'required': {'command_topic'},
    },
}

# Values HA validates against a fixed list (the same pages).
ENTITY_CATEGORIES = {'config', 'diagnostic'}
AVAILABILITY_MODES = {'all', 'any', 'latest'}
STATE_CLASSES = {'measurement', 'measurement_angle', 'total', 'total_increasing'}


def _mapping(where, value, spec):
    problems = []
    if not isinstance(value, dict):
        return [f'{where}: not a mapping']
    for k in value:
        if k not in spec['keys']:
            problems.append(f'{where}: unknown key {k!r}')
    for k in spec['required']:
        if k not in value:
            problems.append(f'{where}: required key {k!r} missing')
    return problems


def check(component, config):
    """Every way `config` departs from the documented keys of `component` (empty: none)."""
    if component not in PLATFORMS:
        return [f'no table for platform {component!r}']
    problems = _mapping(component, config, PLATFORMS[component])
    if 'device' in config:
        problems += _mapping(f'{component}.device', config['device'], DEVICE)
        if not (config['device'].get('identifiers') or config['device'].get('connections')):
            problems.append(f'{component}.device: neither identifiers nor connections')
        if 'unique_id' not in config:
            problems.append(f'{component}: device without unique_id')
    if 'origin' in config:
        problems += _mapping(f'{component}.origin', config['origin'], ORIGIN)
    for i, item in enumerate(config.get('availability', [])):
        problems += _mapping(f'{component}.availability[{i}]', item, AVAILABILITY_ITEM)
    if 'availability' in config and 'availability_topic' in config:
        problems.append(f'{component}: availability and availability_topic together')
    if config.get('entity_category') not in (None, *ENTITY_CATEGORIES):
        problems.append(f'{component}: entity_category {config["entity_category"]!r}')
    if component in ('sensor', 'binary_sensor') and config.get('entity_category') == 'config':
        problems.append(f'{component}: sensors may only be diagnostic')
    if config.get('availability_mode') not in (None, *AVAILABILITY_MODES):
        problems.append(f'{component}: availability_mode {config["availability_mode"]!r}')
    if component == 'sensor':
        if config.get('state_class') not in (None, *STATE_CLASSES):
            problems.append(f'sensor: state_class {config["state_class"]!r}')
        if 'options' in config and ('state_class' in config or 'unit_of_measurement' in config):
            problems.append('sensor: options with state_class or unit_of_measurement')
    did = config.get('default_entity_id')
    if did is not None and not did.startswith(component + '.'):
        problems.append(f'{component}: default_entity_id {did!r} is not "{component}.<object id>"')
    return problems
