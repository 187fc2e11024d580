/* bus-api: the daemon's own D-Bus API, org.kneewrap1.Manager on the system bus, over the one door. */
#pragma once

#include "manager.h"
#include "store.h"

/*
 * Every method calls the manager's one-door functions (manager.h), so the therapy rules
 * decide whatever arrives here, exactly as for the wrap's button or MQTT. Who may call at
 * all is the D-Bus policy's job (systemd/org.kneewrap1.conf); docs/dbus-api.md is the
 * reference for callers.
 */

#define BUS_API_NAME      "org.kneewrap1"
#define BUS_API_PATH      "/org/kneewrap1"
#define BUS_API_INTERFACE "org.kneewrap1.Manager"

#define BUS_API_ERROR_INVALID_ARGS      "org.kneewrap1.Error.InvalidArgs"
#define BUS_API_ERROR_NO_SUCH_WRAP      "org.kneewrap1.Error.NoSuchWrap"
#define BUS_API_ERROR_NO_SESSION        "org.kneewrap1.Error.NoSession"
#define BUS_API_ERROR_REFUSED           "org.kneewrap1.Error.Refused"
#define BUS_API_ERROR_STORE_UNAVAILABLE "org.kneewrap1.Error.StoreUnavailable"
#define BUS_API_ERROR_FAILED            "org.kneewrap1.Error.Failed"
#define BUS_API_ERROR_TOO_MANY          "org.kneewrap1.Error.TooManyRequests"
#define BUS_API_ERROR_ACCESS_DENIED     "org.kneewrap1.Error.AccessDenied"
#define BUS_API_ERROR_NO_SUCH_ALERT     "org.kneewrap1.Error.NoSuchAlert"
#define BUS_API_ERROR_ALREADY_ACKNOWLEDGED "org.kneewrap1.Error.AlreadyAcknowledged"

typedef struct BusApi BusApi;

/* Registers the object on m->bus (before the name is requested, so callers never find the
 * name without the object). */
int bus_api_new(Manager *m, BusApi **ret);
BusApi *bus_api_free(BusApi *a);

/*
 * Something a property shows may have changed (adoption, the wraps, the store, MQTT, STATUS=):
 * emits PropertiesChanged for the ones that did. Cheap; a NULL a does nothing. manager.c
 * calls it from manager_update_status().
 */
void bus_api_changed(BusApi *a);

/* An alert was raised, or (a->acked_at set) acknowledged: emits AlertRaised or
 * AlertAcknowledged. A NULL a does nothing. */
void bus_api_alert(BusApi *api, const AlertRecord *a);
