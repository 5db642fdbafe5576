package org.caremesh.hapi;

import ca.uhn.fhir.rest.annotation.ConditionalUrlParam;
import ca.uhn.fhir.rest.annotation.Create;
import ca.uhn.fhir.rest.annotation.Delete;
import ca.uhn.fhir.rest.annotation.History;
import ca.uhn.fhir.rest.annotation.IdParam;
import ca.uhn.fhir.rest.annotation.Operation;
import ca.uhn.fhir.rest.annotation.OptionalParam;
import ca.uhn.fhir.rest.annotation.Read;
import ca.uhn.fhir.rest.annotation.ResourceParam;
import ca.uhn.fhir.rest.annotation.Search;
import ca.uhn.fhir.rest.annotation.Update;
import ca.uhn.fhir.rest.api.MethodOutcome;
import ca.uhn.fhir.rest.api.server.RequestDetails;
import ca.uhn.fhir.rest.param.ReferenceParam;
import ca.uhn.fhir.rest.param.TokenParam;
import ca.uhn.fhir.rest.server.IResourceProvider;
import ca.uhn.fhir.rest.server.exceptions.InvalidRequestException;
import ca.uhn.fhir.rest.server.exceptions.ResourceGoneException;
import ca.uhn.fhir.rest.server.exceptions.ResourceNotFoundException;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import org.hl7.fhir.instance.model.api.IBaseOperationOutcome;
import org.hl7.fhir.instance.model.api.IBaseResource;
import org.hl7.fhir.instance.model.api.IIdType;

/**
 * The REST interactions on one resource type, over the shared MemoryStore: read, vread,
 * history, create (conditional with If-None-Exist), update (PUT with the client's id, or
 * conditional on a search), delete, search, and $validate with HAPI's validator.
 */
public final class MemoryResourceProvider implements IResourceProvider {
  private final Class<? extends IBaseResource> resourceType;
  private final String typeName;
  private final MemoryStore store;
  private final Validation validation;

  MemoryResourceProvider(String typeName, MemoryStore store, Validation validation) {
    this.typeName = typeName;
    this.store = store;
    this.validation = validation;
    this.resourceType = store.context().getResourceDefinition(typeName).getImplementingClass();
  }

  @Override
  public Class<? extends IBaseResource> getResourceType() {
    return resourceType;
  }

  @Read(version = true)
  public IBaseResource read(@IdParam IIdType id) {
    List<IBaseResource> versions = store.versions(typeName, id.getIdPart());
    if (versions.isEmpty()) {
      throw new ResourceNotFoundException(id);
    }
    IBaseResource found;
    if (id.hasVersionIdPart()) {
      int v = parseVersion(id);
      if (v < 1 || v > versions.size()) {
        throw new ResourceNotFoundException(id);
      }
      found = versions.get(v - 1);
    } else {
      found = versions.get(versions.size() - 1);
    }
    if (found == null) {
      throw new ResourceGoneException(id);
    }
    return found;
  }

  @History
  public List<IBaseResource> history(@IdParam IIdType id) {
    List<IBaseResource> out = new ArrayList<>();
    for (IBaseResource r : store.versions(typeName, id.getIdPart())) {
      if (r != null) {
        out.add(r);
      }
    }
    if (out.isEmpty()) {
      throw new ResourceNotFoundException(id);
    }
    Collections.reverse(out); // newest first, as FHIR's history is
    return out;
  }

  @Search(allowUnknownParams = false)
  public List<IBaseResource> search(
      @OptionalParam(name = "_id") TokenParam theId,
      @OptionalParam(name = "identifier") TokenParam identifier,
      @OptionalParam(name = "subject") ReferenceParam subject,
      @OptionalParam(name = "patient") ReferenceParam patient,
      RequestDetails request) {
    // The typed parameters select this method; the raw ones carry ORs, repeats and chains.
    return store.search(typeName, request.getParameters());
  }

  @Create
  public MethodOutcome create(
      @ResourceParam IBaseResource resource, @ConditionalUrlParam String ifNoneExist, RequestDetails request) {
    synchronized (store) {
      if (ifNoneExist != null) {
        IBaseResource existing = store.matchOne(typeName, query(ifNoneExist));
        if (existing != null) {
          return outcome(existing, false);
        }
      }
      store.checkReferences(resource, request.getFhirServerBase(), null);
      return outcome(store.put(typeName, store.newId(typeName), resource), true);
    }
  }

  @Update
  public MethodOutcome update(
      @IdParam IIdType id,
      @ResourceParam IBaseResource resource,
      @ConditionalUrlParam String conditional,
      RequestDetails request) {
    synchronized (store) {
      String target;
      if (conditional != null) {
        IBaseResource match = store.matchOne(typeName, query(conditional));
        String bodyId = resource.getIdElement().getIdPart();
        if (match == null) {
          target = bodyId != null ? bodyId : store.newId(typeName);
        } else {
          target = match.getIdElement().getIdPart();
          if (bodyId != null && !bodyId.equals(target)) {
            throw new InvalidRequestException("The resource's id does not match the conditional match");
          }
        }
      } else {
        target = id.getIdPart();
      }
      boolean created = !store.holds(typeName, target);
      store.checkReferences(resource, request.getFhirServerBase(), null);
      return outcome(store.put(typeName, target, resource), created);
    }
  }

  @Delete
  public MethodOutcome delete(@IdParam IIdType id) {
    if (!store.delete(typeName, id.getIdPart())) {
      throw new ResourceNotFoundException(id);
    }
    return new MethodOutcome();
  }

  /** POST [type]/$validate with the resource as body: HAPI's validator's OperationOutcome. */
  @Operation(name = "$validate", manualRequest = true, idempotent = false)
  public IBaseOperationOutcome validate(RequestDetails request) {
    return validation.validate(request);
  }

  static String query(String conditionalUrl) {
    int q = conditionalUrl.indexOf('?');
    return q < 0 ? conditionalUrl : conditionalUrl.substring(q + 1);
  }

  private static int parseVersion(IIdType id) {
    try {
      return Integer.parseInt(id.getVersionIdPart());
    } catch (NumberFormatException e) {
      return -1;
    }
  }

  private static MethodOutcome outcome(IBaseResource stored, boolean created) {
    MethodOutcome out = new MethodOutcome(stored.getIdElement(), created);
    out.setResource(stored);
    return out;
  }
}
