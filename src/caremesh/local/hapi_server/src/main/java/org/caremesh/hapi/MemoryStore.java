package org.caremesh.hapi;

import ca.uhn.fhir.context.FhirContext;
import ca.uhn.fhir.context.RuntimeResourceDefinition;
import ca.uhn.fhir.parser.IParser;
import ca.uhn.fhir.rest.server.exceptions.InvalidRequestException;
import ca.uhn.fhir.rest.server.exceptions.PreconditionFailedException;
import ca.uhn.fhir.rest.server.exceptions.UnprocessableEntityException;
import ca.uhn.fhir.util.FhirTerser;
import java.net.URLDecoder;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Date;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.regex.Pattern;
import org.hl7.fhir.instance.model.api.IBase;
import org.hl7.fhir.instance.model.api.IBaseReference;
import org.hl7.fhir.instance.model.api.IBaseResource;
import org.hl7.fhir.instance.model.api.IIdType;

/**
 * Every resource of the server, all versions, in memory; one lock. Searches by _id, identifier,
 * subject and patient (with the chain patient.identifier), the way conditional operations need
 * them; references are checked as HAPI's JPA server checks them (a Type/id it does not hold is
 * refused).
 */
final class MemoryStore {
  static final Pattern FHIR_ID = Pattern.compile("[A-Za-z0-9\\-.]{1,64}");
  private static final List<String> PATIENT_ELEMENTS = List.of("subject", "patient", "beneficiary");

  private final FhirContext ctx;
  private final FhirTerser terser;
  private final IParser parser;
  /** type -> id -> versions, oldest first; a null version is a deletion. */
  private final Map<String, Map<String, List<IBaseResource>>> data = new HashMap<>();
  private long nextId = 1;

  MemoryStore(FhirContext ctx) {
    this.ctx = ctx;
    this.terser = ctx.newTerser();
    this.parser = ctx.newJsonParser();
  }

  FhirContext context() {
    return ctx;
  }

  // -- reading ---------------------------------------------------------------------------------

  synchronized List<IBaseResource> versions(String type, String id) {
    List<IBaseResource> found = data.getOrDefault(type, Map.of()).get(id);
    return found == null ? List.of() : new ArrayList<>(found);
  }

  /** The current version, or null when absent or deleted. */
  synchronized IBaseResource current(String type, String id) {
    List<IBaseResource> v = data.getOrDefault(type, Map.of()).get(id);
    return v == null ? null : v.get(v.size() - 1);
  }

  synchronized boolean holds(String type, String id) {
    return current(type, id) != null;
  }

  /** Current resources of `type` matching every parameter (repeats are AND, commas are OR). */
  synchronized List<IBaseResource> search(String type, Map<String, String[]> params) {
    List<IBaseResource> out = new ArrayList<>();
    for (List<IBaseResource> versions : data.getOrDefault(type, Map.of()).values()) {
      IBaseResource r = versions.get(versions.size() - 1);
      if (r != null && matchesAll(r, params)) {
        out.add(r);
      }
    }
    return out;
  }

  /** Search with a query string ("identifier=s|v&..."), as conditional operations give it. */
  synchronized List<IBaseResource> search(String type, String query) {
    Map<String, String[]> params = new LinkedHashMap<>();
    for (String pair : query.split("&")) {
      if (pair.isEmpty()) {
        continue;
      }
      int eq = pair.indexOf('=');
      String name = URLDecoder.decode(eq < 0 ? pair : pair.substring(0, eq), StandardCharsets.UTF_8);
      String value = eq < 0 ? "" : URLDecoder.decode(pair.substring(eq + 1), StandardCharsets.UTF_8);
      String[] old = params.getOrDefault(name, new String[0]);
      String[] now = java.util.Arrays.copyOf(old, old.length + 1);
      now[old.length] = value;
      params.put(name, now);
    }
    if (params.isEmpty()) {
      throw new InvalidRequestException("a conditional operation needs search parameters");
    }
    return search(type, params);
  }

  /** The one match of a conditional URL ("Patient?identifier=..."), null for none, 412 for more. */
  synchronized IBaseResource matchOne(String type, String query) {
    List<IBaseResource> found = search(type, query);
    if (found.size() > 1) {
      throw new PreconditionFailedException(
          "Multiple " + type + " resources match the conditional URL (" + found.size() + ")");
    }
    return found.isEmpty() ? null : found.get(0);
  }

  private boolean matchesAll(IBaseResource r, Map<String, String[]> params) {
    for (Map.Entry<String, String[]> p : params.entrySet()) {
      String name = p.getKey();
      if (name.startsWith("_") && !name.equals("_id")) {
        continue; // _format, _count, _pretty...: not filters here
      }
      for (String value : p.getValue()) {
        boolean any = false;
        for (String alternative : value.split(",")) {
          any |= matches(r, name, alternative);
        }
        if (!any) {
          return false;
        }
      }
    }
    return true;
  }

  private boolean matches(IBaseResource r, String name, String value) {
    String base = name.contains(":") ? name.substring(0, name.indexOf(':')) : name;
    switch (base) {
      case "_id":
        return r.getIdElement().getIdPart().equals(value);
      case "identifier":
        return hasIdentifier(r, value);
      case "subject":
      case "patient":
        return refersTo(r, base.equals("patient"), value);
      default:
        if (base.startsWith("patient.identifier") || base.startsWith("subject.identifier")) {
          for (IBaseResource p : search("Patient", Map.of("identifier", new String[] {value}))) {
            if (refersTo(r, false, "Patient/" + p.getIdElement().getIdPart())) {
              return true;
            }
          }
          return patientReferencesCarry(r, value);
        }
        throw new InvalidRequestException("search parameter not supported by this test server: " + base);
    }
  }

  private boolean hasIdentifier(IBase element, String token) {
    String system = null;
    String value = token;
    int bar = token.indexOf('|');
    if (bar >= 0) {
      system = token.substring(0, bar);
      value = token.substring(bar + 1);
    }
    if (!hasChild(element, "identifier")) {
      return false;
    }
    for (IBase id : terser.getValues(element, "identifier")) {
      String s = terser.getSinglePrimitiveValueOrNull(id, "system");
      String v = terser.getSinglePrimitiveValueOrNull(id, "value");
      boolean systemOk = system == null || (system.isEmpty() ? s == null : system.equals(s));
      if (systemOk && (value.isEmpty() || value.equals(v))) {
        return true;
      }
    }
    return false;
  }

  private boolean hasChild(IBase element, String child) {
    if (element instanceof IBaseResource res) {
      return ctx.getResourceDefinition(res).getChildByName(child) != null;
    }
    return true;
  }

  private List<IBaseReference> patientReferences(IBaseResource r) {
    List<IBaseReference> out = new ArrayList<>();
    RuntimeResourceDefinition def = ctx.getResourceDefinition(r);
    for (String element : PATIENT_ELEMENTS) {
      if (def.getChildByName(element) != null) {
        for (IBase v : terser.getValues(r, element)) {
          if (v instanceof IBaseReference ref) {
            out.add(ref);
          }
        }
      }
    }
    return out;
  }

  private boolean refersTo(IBaseResource r, boolean patientOnly, String value) {
    String want = value.contains("/") ? value : "Patient/" + value;
    for (IBaseReference ref : patientReferences(r)) {
      IIdType id = ref.getReferenceElement();
      if (id == null || id.isEmpty() || !id.hasIdPart()) {
        continue;
      }
      if (patientOnly && !"Patient".equals(id.getResourceType())) {
        continue;
      }
      if ((id.getResourceType() + "/" + id.getIdPart()).equals(want)) {
        return true;
      }
    }
    return false;
  }

  /** Logical references (Reference.identifier) to the patient. */
  private boolean patientReferencesCarry(IBaseResource r, String token) {
    for (IBaseReference ref : patientReferences(r)) {
      if (hasIdentifier(ref, token)) {
        return true;
      }
    }
    return false;
  }

  // -- writing ---------------------------------------------------------------------------------

  synchronized String newId(String type) {
    while (true) {
      String id = Long.toString(nextId++);
      if (!data.getOrDefault(type, Map.of()).containsKey(id)) {
        return id;
      }
    }
  }

  /** Store a new version of type/id (the id may be new); returns the stored copy. */
  synchronized IBaseResource put(String type, String id, IBaseResource resource) {
    if (!FHIR_ID.matcher(id).matches()) {
      throw new InvalidRequestException("Invalid resource id (FHIR ids are 1-64 of [A-Za-z0-9-.])");
    }
    List<IBaseResource> versions = data.computeIfAbsent(type, t -> new HashMap<>())
        .computeIfAbsent(id, i -> new ArrayList<>());
    IBaseResource copy = parser.parseResource(parser.encodeResourceToString(resource));
    String version = Integer.toString(versions.size() + 1);
    IIdType full = ctx.getVersion().newIdType().setParts(null, type, id, version);
    copy.setId(full);
    copy.getMeta().setVersionId(version);
    copy.getMeta().setLastUpdated(new Date());
    versions.add(copy);
    return copy;
  }

  synchronized boolean delete(String type, String id) {
    List<IBaseResource> versions = data.getOrDefault(type, Map.of()).get(id);
    if (versions == null || versions.get(versions.size() - 1) == null) {
      return false;
    }
    versions.add(null);
    return true;
  }

  // -- references ------------------------------------------------------------------------------

  /**
   * Resolve conditional references (Type?query) and refuse any reference this server cannot
   * resolve: a Type/id it does not hold (and `pending` does not create), a urn:uuid or urn:oid
   * placeholder, or an unknown type. Contained (#) and absolute external references pass.
   */
  synchronized void checkReferences(IBaseResource resource, String baseUrl, Set<String> pending) {
    String owner = ctx.getResourceType(resource);
    for (IBaseReference ref : terser.getAllPopulatedChildElementsOfType(resource, IBaseReference.class)) {
      IIdType element = ref.getReferenceElement();
      String value = element == null ? null : element.getValue();
      if (value == null || value.isEmpty() || value.startsWith("#")) {
        continue;
      }
      if (baseUrl != null && value.startsWith(baseUrl + "/")) {
        value = value.substring(baseUrl.length() + 1);
      }
      if (value.startsWith("http://") || value.startsWith("https://")) {
        continue; // another server's resource
      }
      if (value.startsWith("urn:")) {
        throw new UnprocessableEntityException(
            "Unable to satisfy placeholder reference " + value + " in a resource of type " + owner);
      }
      int q = value.indexOf('?');
      if (q > 0) {
        String type = value.substring(0, q);
        requireType(type, owner);
        IBaseResource match = matchOne(type, value.substring(q + 1));
        if (match == null) {
          throw new UnprocessableEntityException(
              "Conditional reference in " + owner + " matches no " + type + " resource");
        }
        ref.setReference(type + "/" + match.getIdElement().getIdPart());
        continue;
      }
      String[] parts = value.split("/");
      if (parts.length != 2 && !(parts.length == 4 && parts[2].equals("_history"))) {
        throw new UnprocessableEntityException("Invalid reference in " + owner + ": not Type/id");
      }
      requireType(parts[0], owner);
      String key = parts[0] + "/" + parts[1];
      if (!holds(parts[0], parts[1]) && (pending == null || !pending.contains(key))) {
        throw new UnprocessableEntityException(
            "Resource " + key + " not found, specified in a resource of type " + owner);
      }
    }
  }

  private void requireType(String type, String owner) {
    if (!ctx.getResourceTypes().contains(type)) {
      throw new UnprocessableEntityException(
          "Invalid reference in " + owner + ": unknown resource type " + type);
    }
  }
}
